//! Text classification: labelled texts in, a BERT encoder (from a Hugging Face or
//! sentence-transformers model folder) with a new linear head out. The second task on the seam:
//! its data (`crate::data::text`), its model (`TextClassifier`), its batches (tokenized per
//! batch, padded to the batch's longest text), its strategies (the network trains, or a linear
//! probe on cached pooled embeddings) and its report's examples (the misclassified texts).

mod evaluate;
pub mod model_files;
mod network;
pub mod predict;
mod probe;

use std::path::Path;

use burn::module::Module;

use crate::config::{BnPolicy, FitConfig, Strategy};
use crate::data::text::{TextDataset, is_text_spec, open_text};
use crate::error::{Error, Result};
use crate::loss::Loss;
use crate::metrics::{ACCURACY, MetricsAccumulator};
use crate::model::params::{Strictness, Trainable, count_params, load_into, set_trainable};
use crate::model::text_encoder::{
    EncoderFolder, Pooling, TEXT_HEAD, TextClassifier, is_model_folder,
};
use crate::model::tokenizer::TextTokenizer;
use crate::task::classification::head::evaluate_features;
use crate::task::classification::probe::train_head;
use crate::task::classification::setup::{head_width, run_loss};
use crate::tensor::DeviceKind;
use crate::train::{Evaluated, Fitted, History, Metric, Run, Task, TaskData, TaskReport, Trainer};
use crate::weights::{TensorMap, load_pretrained};

pub use evaluate::evaluate_texts;
pub use model_files::{TextCard, load_text_run};

/// The text-classification task.
pub struct TextClassification;

impl Task for TextClassification {
    const NAME: &'static str = "text-classification";
    const IMAGENET_WEIGHTS: bool = false;
    const SUMMARY: &'static str = "labelled texts (csv, tsv, jsonl, text folders) → a BERT \
                                   encoder from a model folder with a new linear head";
    const METRICS: &'static [Metric] = &[ACCURACY];

    type Data = TextDataset;

    fn recognizes(cfg: &FitConfig) -> bool {
        is_text_spec(&cfg.data)
            || is_model_folder(Path::new(&cfg.weights))
            || crate::weights::hub::is_published_folder(&cfg.weights)
    }

    /// The recipe that works for BERT fine-tuning (AdamW, a small learning rate warmed up
    /// linearly over the first 10% of steps and decaying linearly to 0 at every step, as
    /// transformers' Trainer does, weight decay 0.01, batches of 32 of similar lengths, 3
    /// epochs); a linear probe on the frozen embeddings is fitted like an image probe (L-BFGS
    /// by default; with `--probe sgd`, Adam-style at 1e-3 for 10 epochs).
    fn defaults(cfg: &FitConfig) -> Vec<(&'static str, String)> {
        let probe = cfg.strategy == Strategy::LinearProbe;
        let model = Path::new(&cfg.weights)
            .file_name()
            .map_or_else(|| "bert".to_string(), |n| n.to_string_lossy().into_owned());
        vec![
            ("model", model),
            ("optimizer", "adamw".into()),
            ("weight_decay", "0.01".into()),
            ("lr", if probe { "0.001" } else { "5e-5" }.into()),
            ("epochs", if probe { "10" } else { "3" }.into()),
            ("batch_size", "32".into()),
            ("schedule", if probe { "constant" } else { "linear" }.into()),
            ("schedule_unit", if probe { "epoch" } else { "step" }.into()),
            ("warmup_ratio", if probe { "0" } else { "0.1" }.into()),
            ("group_by_length", "true".into()),
        ]
    }

    fn check(cfg: &FitConfig) -> Result<()> {
        crate::task::classification::setup::check_classification(cfg)?;
        if cfg.weights == "none" || cfg.weights == crate::weights::hub::IMAGENET {
            return Err(Error::invalid(
                "text classification needs --weights MODEL: a published text model by name \
                 (--weights all-MiniLM-L6-v2, downloaded once; `graft weights` lists them) or a \
                 Hugging Face or sentence-transformers folder (config.json, tokenizer.json, \
                 weights); its config and tokenizer define the network, even for --strategy \
                 scratch",
            ));
        }
        let folder = EncoderFolder::read(Path::new(&cfg.weights))?;
        if let Strategy::Partial(k) = cfg.strategy {
            let layers = folder.config.num_hidden_layers;
            if k > layers + 1 {
                return Err(Error::invalid(format!(
                    "--strategy partial:{k}: the encoder has {layers} layers (use partial:1 to \
                     partial:{layers}, or fine-tune for all of them and the embeddings)"
                )));
            }
        }
        if let Some(n) = cfg.max_length
            && n > folder.config.max_position_embeddings
        {
            return Err(Error::invalid(format!(
                "--max-length {n}: the model has {} positions",
                folder.config.max_position_embeddings
            )));
        }
        if cfg.strategy != Strategy::Scratch && folder.weights.is_none() {
            return Err(Error::file(
                &folder.dir,
                "holds no weights (model.safetensors or pytorch_model.bin): only --strategy \
                 scratch can use it",
            ));
        }
        Ok(())
    }

    fn open(cfg: &FitConfig) -> Result<TextDataset> {
        if cfg.data.is_empty() {
            return Err(Error::invalid(
                "no dataset: pass --data csv:FILE (or textfolder:DIR)",
            ));
        }
        let mut ds = open_text(&cfg.data)?;
        if let Some(n) = cfg.limit_train {
            ds = ds.limit_train(n, cfg.seed);
        }
        if let Some(n) = cfg.limit_test {
            ds = ds.limit_test(n, cfg.seed);
        }
        Ok(ds)
    }

    fn fit(run: &Run<'_>, ds: &TextDataset) -> Result<Fitted> {
        let cfg = run.cfg;
        let folder = EncoderFolder::read(Path::new(&cfg.weights))?;
        let max_length = cfg.max_length.unwrap_or(folder.max_length);
        let tokenizer = folder.tokenizer_with(max_length)?;
        let pooling = match cfg.pooling {
            Pooling::Auto => folder.pooling,
            p => p,
        };
        let classes = head_width(cfg, &ds.name, &ds.class_names, &ds.labels_of(&ds.train))?;
        let loss = run_loss(cfg, &ds.class_counts(&ds.train), classes)?;
        run.say(format!(
            "graft fit: {} on {} ({} classes; train {}, val {}, test {}), strategy {}, \
             {max_length} tokens, {pooling} pooling, run {}",
            folder.dir.display(),
            ds.name,
            classes,
            ds.train.len(),
            ds.val.as_ref().map_or(0, Vec::len),
            ds.test.len(),
            cfg.strategy,
            run.dir.display()
        ));
        let model = build_model(run, &folder, classes, pooling)?;
        let setup = Setup {
            run,
            ds,
            tokenizer: &tokenizer,
            loss: &loss,
            classes,
            folder: &folder,
            max_length,
            pooling,
        };
        let (model, history, test, cache_status, params) = match cfg.strategy {
            Strategy::LinearProbe => train_probe(&setup, model)?,
            _ => train_network(&setup, model)?,
        };
        let evaluation = test.finish(&ds.class_names).with_data(&cfg.data);
        let eval_json = serde_json::to_string_pretty(&evaluation).unwrap_or_default();
        crate::files::write_atomic(&run.dir.join("eval.json"), eval_json.as_bytes())?;
        model_files::save(run.dir, &model, &folder, cfg, ds, classes, max_length)?;
        Ok(Fitted {
            history: history.epochs,
            stopped_early: history.stopped_early,
            test: vec![(ACCURACY.name, evaluation.accuracy)],
            test_samples: evaluation.samples,
            params,
            feature_cache: cache_status.map(str::to_string),
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
        evaluate::report(run_dir, cfg)
    }
}

impl TaskData for TextDataset {
    fn name(&self) -> &str {
        &self.name
    }

    fn sizes(&self) -> (usize, usize, usize) {
        (
            self.train.len(),
            self.val.as_ref().map_or(0, Vec::len),
            self.test.len(),
        )
    }

    fn with_val_split(self, fraction: f64, seed: u64) -> Self {
        TextDataset::with_val_split(self, fraction, seed)
    }

    fn folds(&self, k: usize, seed: u64) -> Result<Vec<Self>> {
        TextDataset::folds(self, k, seed)
    }
}

/// A model folder's weights with Hugging Face's `bert.` prefix (task checkpoints such as
/// `BertForSequenceClassification`) taken off; tensors outside the encoder stay and are
/// reported unused.
pub fn encoder_weights(path: &Path) -> Result<TensorMap> {
    let mut map = load_pretrained(path)?;
    if map.tensors.keys().any(|k| k.starts_with("bert.")) {
        map.tensors = std::mem::take(&mut map.tensors)
            .into_iter()
            .map(|(k, t)| (k.strip_prefix("bert.").map_or(k.clone(), str::to_string), t))
            .collect();
    }
    Ok(map)
}

/// The model a run starts from: the folder's encoder (random for `scratch`) and a fresh head.
fn build_model(
    run: &Run<'_>,
    folder: &EncoderFolder,
    classes: usize,
    pooling: Pooling,
) -> Result<TextClassifier> {
    let model = TextClassifier::new(folder.config, classes, pooling, run.device);
    let (Some(path), false) = (&folder.weights, run.cfg.strategy == Strategy::Scratch) else {
        return Ok(model);
    };
    let weights = encoder_weights(path)?;
    let (model, report) = load_into(model, &weights, TEXT_HEAD, Strictness::SkipHead)
        .map_err(|e| Error::file(path, e.to_string()))?;
    run.say(format!(
        "loaded {} tensors from {}{}",
        report.loaded,
        path.display(),
        if report.unused.is_empty() {
            String::new()
        } else {
            format!(
                " ({} unused: {})",
                report.unused.len(),
                report.unused.join(", ")
            )
        }
    ));
    Ok(model)
}

/// What both strategies share.
struct Setup<'a> {
    run: &'a Run<'a>,
    ds: &'a TextDataset,
    tokenizer: &'a TextTokenizer,
    loss: &'a Loss,
    classes: usize,
    folder: &'a EncoderFolder,
    max_length: usize,
    pooling: Pooling,
}

/// The trained model, its history, its test metrics, the cache status and (all, trainable)
/// parameter counts.
type Outcome = (
    TextClassifier,
    History,
    MetricsAccumulator,
    Option<&'static str>,
    (usize, usize),
);

/// Fine-tune, partial and scratch: the encoder trains (its last K layers for `partial:K`).
fn train_network(s: &Setup<'_>, model: TextClassifier) -> Result<Outcome> {
    let cfg = s.run.cfg;
    let config = s.folder.config;
    let head = TEXT_HEAD;
    let trains = |key: &str| -> bool {
        if key.starts_with(&format!("{head}.")) {
            return true;
        }
        let (stage, n) = config.stage_of(key);
        cfg.strategy.trains_stage(stage, n)
    };
    // Dropout (a `training` flag like BatchNorm's) is active where the weights train.
    let dropout_trains = |key: &str| {
        cfg.bn == BnPolicy::Train && (key.starts_with(head) || trains(&format!("{key}.weight")))
    };
    let ad = s.run.device.clone().autodiff();
    let model = set_trainable(
        model.train(),
        head,
        &Trainable {
            param: &trains,
            batch_norm: &dropout_trains,
        },
    );
    let params = count_params(&model);
    s.run
        .say(format!("{} of {} parameters train", params.1, params.0));
    let objective = network::TextObjective {
        loss: s.loss,
        ds: s.ds,
        train: s.ds.train.clone(),
        val: s.ds.val.clone(),
        tokenizer: s.tokenizer,
        classes: s.classes,
        batch_size: cfg.batch_size,
        seed: cfg.seed,
        sampler: cfg.sampler,
        group_by_length: cfg.group_by_length,
        lr_mult: cfg.backbone_lr_mult,
        device: ad.clone(),
    };
    let mut trainer = Trainer::new(objective, model, cfg.optimizer_config(), ad).seeded(cfg.seed);
    let history = s.run.train(&mut trainer, TextClassification::METRICS)?;
    let model = trainer.model.valid();
    let test = evaluate_texts(
        &model,
        s.ds,
        &s.ds.test,
        s.tokenizer,
        cfg.batch_size,
        s.loss,
        s.classes,
    )?;
    Ok((model, history, test, None, params))
}

/// The linear probe: pooled embeddings of the frozen encoder computed once (cached), then the
/// head trains on them.
fn train_probe(s: &Setup<'_>, model: TextClassifier) -> Result<Outcome> {
    let cfg = s.run.cfg;
    let dim = s.folder.config.hidden_size;
    let frozen = model.valid();
    let cache_dir = crate::task::classification::feature_cache::cache_dir(cfg.cache_dir.as_deref());
    let features = probe::extract_features(
        &frozen,
        s.ds,
        s.tokenizer,
        &probe::CacheSpec {
            dir: &cache_dir,
            folder: s.folder,
            max_length: s.max_length,
            pooling: s.pooling,
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
        TextClassification::METRICS,
    )?;
    let test = evaluate_features(&head, &features.test, dim, s.classes, s.loss, s.run.device);
    let trainable = head.weight.dims().iter().product::<usize>() + head.bias.dims()[0];
    let mut model = frozen;
    model.head = head;
    let (total, _) = count_params(&model);
    Ok((
        model,
        history,
        test,
        Some(features.cache_status),
        (total, trainable),
    ))
}
