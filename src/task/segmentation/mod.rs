//! Semantic segmentation: images with masks of class indices in (`seg:DIR`), a pretrained
//! backbone with smp's FPN decoder and a per-pixel head out. The third task on the seam: its
//! data and paired transforms (`data`), its loss (`loss`: smp's Dice / Jaccard / Focal,
//! cross-entropy, `ce+dice`), its objective (`network`), its evaluation (mIoU, pixel accuracy,
//! Dice per class as smp computes them), its model files and its report sections.

pub mod data;
mod evaluate;
pub mod loss;
pub mod model_files;
mod network;
pub mod predict;
mod report;

use std::path::Path;

use burn::module::Module;

use crate::config::{BnPolicy, FitConfig, Strategy};
use crate::error::{Error, Result};
use crate::metrics::segmentation::{MIOU, PIXEL_ACCURACY};
use crate::model::params::{Strictness, Trainable, count_params, load_into, set_trainable};
use crate::model::segmenter::{SEGMENTATION_HEAD, SIZE_MULTIPLE};
use crate::model::{Classifier, Preset, Segmenter, preset, with_model_hint};
use crate::tensor::DeviceKind;
use crate::train::{Evaluated, Fitted, Metric, Run, Task, TaskData, TaskReport, Trainer};
use crate::weights::load_pretrained;

use data::{PairTransform, SegDataset, is_seg_spec};
use evaluate::{SegEvaluation, evaluate_segmenter};
use loss::SegLoss;
use model_files::SegCard;

pub use evaluate::evaluate_run;
pub use model_files::load_seg_run;

/// The semantic-segmentation task.
pub struct Segmentation;

/// Default input side bounds when it follows the data.
const MIN_AUTO_SIZE: usize = 64;
const MAX_AUTO_SIZE: usize = 512;

impl Task for Segmentation {
    const NAME: &'static str = "segmentation";
    const SUMMARY: &'static str = "images with masks of class indices (seg:DIR) → a backbone with \
                                   smp's FPN or U-Net decoder, per-pixel classes (mIoU)";
    const METRICS: &'static [Metric] = &[MIOU, PIXEL_ACCURACY];
    const TRANSFER_STRATEGIES: &'static [&'static str] = &["frozen", "fine-tune", "scratch"];

    type Data = SegDataset;

    fn recognizes(cfg: &FitConfig) -> bool {
        is_seg_spec(&cfg.data)
    }

    /// Cross-entropy plus Dice (each covers the other's weakness: CE's per-pixel gradients
    /// early, Dice's insensitivity to the background's share), batches of 16.
    fn defaults(_cfg: &FitConfig) -> Vec<(&'static str, String)> {
        vec![("loss", "ce+dice".into()), ("batch_size", "16".into())]
    }

    fn check(cfg: &FitConfig) -> Result<()> {
        let p = preset(&cfg.model)?;
        SegLoss::check(cfg)?;
        match cfg.strategy {
            Strategy::LinearProbe => {
                return Err(Error::invalid(
                    "--strategy linear-probe fits a classification head on pooled features; \
                     for segmentation use frozen (the decoder trains on the fixed backbone), \
                     fine-tune, partial:K or scratch",
                ));
            }
            Strategy::Partial(k) => {
                let stages = p.arch.feature_info().len();
                if k > stages {
                    return Err(Error::invalid(format!(
                        "--strategy partial:{k}: {} has {stages} stages (use partial:1 to \
                         partial:{stages}, or fine-tune for all of them)",
                        p.name
                    )));
                }
            }
            _ => {}
        }
        if cfg.group_by_length {
            return Err(Error::invalid(
                "--group-by-length batches texts by length; images have none (drop it)",
            ));
        }
        if let Some(size) = cfg.image_size
            && !size.is_multiple_of(SIZE_MULTIPLE)
        {
            return Err(Error::invalid(format!(
                "--image-size {size}: segmentation needs a multiple of {SIZE_MULTIPLE} (the \
                 decoder doubles its way up from 1/32 of the input): try {}",
                size.div_ceil(SIZE_MULTIPLE).max(1) * SIZE_MULTIPLE
            )));
        }
        if cfg.strategy == Strategy::Frozen && cfg.weights == "none" {
            return Err(Error::invalid(
                "--strategy frozen keeps the backbone as loaded, and --weights is none: a \
                 random backbone would stay random. Give --weights FILE (pretrained), or use \
                 --strategy scratch",
            ));
        }
        Ok(())
    }

    fn open(cfg: &FitConfig) -> Result<SegDataset> {
        if cfg.data.is_empty() {
            return Err(Error::invalid(
                "no dataset: pass --data seg:DIR (DIR/train/images, DIR/train/masks, ...)",
            ));
        }
        let mut ds = SegDataset::open(&cfg.data)?;
        if let Some(n) = cfg.limit_train {
            ds = ds.limit_train(n, cfg.seed);
        }
        if let Some(n) = cfg.limit_test {
            ds = ds.limit_test(n, cfg.seed);
        }
        Ok(ds)
    }

    fn fit(run: &Run<'_>, ds: &SegDataset) -> Result<Fitted> {
        let cfg = run.cfg;
        let preset = *preset(&cfg.model)?;
        let classes = ds.class_names.len();
        if let Some(n) = cfg.num_classes
            && n != classes
        {
            return Err(Error::invalid(format!(
                "--num-classes {n}: {} has {classes} classes (drop the flag)",
                ds.name
            )));
        }
        let size = match cfg.image_size {
            Some(s) => s,
            None => {
                let s = size_of_data(ds)?;
                run.say(format!(
                    "image size {s} px (the training images' larger side, rounded up to a \
                     multiple of {SIZE_MULTIPLE}; --image-size to change)"
                ));
                s
            }
        };
        let class_pixels = match cfg.class_weights {
            crate::loss::ClassWeights::Auto => Some(ds.class_pixels(&ds.train)?),
            _ => None,
        };
        let loss = SegLoss::new(cfg, classes, class_pixels.as_deref())?;
        run.say(format!(
            "graft fit: {} + {} on {} ({classes} classes; train {}, val {}, test {}), \
             strategy {}, loss {}, {size}px, run {}",
            preset.name,
            cfg.decoder,
            ds.name,
            ds.train.len(),
            ds.val.as_ref().map_or(0, Vec::len),
            ds.test.len(),
            cfg.strategy,
            cfg.loss,
            run.dir.display()
        ));
        let model = build_model(run, &preset, classes)?;
        let (model, history, params) = train(run, &preset, ds, &loss, model, size)?;
        let card = SegCard {
            task: Self::NAME.into(),
            model: preset.name.into(),
            decoder: cfg.decoder,
            num_classes: classes,
            class_names: ds.class_names.clone(),
            image_size: size,
            data: cfg.data.clone(),
            strategy: cfg.strategy.to_string(),
            mean: preset.mean,
            std: preset.std,
        };
        let tally = evaluate_segmenter(
            &model.folded_for_inference(),
            &ds.test,
            &card.eval_transform(),
            cfg.batch_size,
            &loss,
            classes,
            run.quiet,
        )?;
        let evaluation = SegEvaluation::new(&tally, &ds.class_names, ds.test.len(), &cfg.data);
        let json = serde_json::to_string_pretty(&evaluation).unwrap_or_default();
        crate::files::write_atomic(&run.dir.join("eval.json"), json.as_bytes())?;
        model_files::save_model(run.dir, &model, &card)?;
        Ok(Fitted {
            history: history.epochs,
            stopped_early: history.stopped_early,
            test: vec![
                (MIOU.name, evaluation.miou),
                (PIXEL_ACCURACY.name, evaluation.pixel_accuracy),
            ],
            test_samples: ds.test.len(),
            params,
            feature_cache: None,
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

impl TaskData for SegDataset {
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
        SegDataset::with_val_split(self, fraction, seed)
    }

    fn folds(&self, k: usize, seed: u64) -> Result<Vec<Self>> {
        SegDataset::folds(self, k, seed)
    }
}

/// The input side when `--image-size` is not given: the first training image's larger side,
/// rounded up to a multiple of 32, within 64..=512 (no silent 7× upscale of small images).
fn size_of_data(ds: &SegDataset) -> Result<usize> {
    let first = &ds.train[0].image;
    let (w, h) = image::image_dimensions(first)
        .map_err(|e| Error::file(first, format!("not a readable image: {e}")))?;
    let side = w.max(h) as usize;
    Ok((side.div_ceil(SIZE_MULTIPLE) * SIZE_MULTIPLE).clamp(MIN_AUTO_SIZE, MAX_AUTO_SIZE))
}

/// The model a run starts from: the pretrained backbone (unless `scratch` or `--weights none`)
/// with a fresh decoder and head.
fn build_model(run: &Run<'_>, preset: &Preset, classes: usize) -> Result<Segmenter> {
    let cfg = run.cfg;
    if cfg.strategy == Strategy::Scratch || cfg.weights == "none" {
        if cfg.strategy != Strategy::Scratch {
            run.say(
                "warning: --weights none: the backbone is randomly initialised, nothing is \
                 transferred",
            );
        }
        return Ok(Segmenter::new(preset, cfg.decoder, classes, run.device));
    }
    // The backbone loads as a classifier's would (same keys, same hints for a wrong file);
    // the file's classification head is not used.
    let weights = load_pretrained(Path::new(&cfg.weights))?;
    let (classifier, report) = load_into(
        Classifier::new(preset, 1, run.device),
        &weights,
        preset.head_name,
        Strictness::SkipHead,
    )
    .map_err(|e| {
        Error::file(
            &cfg.weights,
            with_model_hint(e.to_string(), &weights, preset.name),
        )
    })?;
    run.say(format!(
        "loaded {} backbone tensors from {}; new {} decoder and {classes}-class head",
        report.loaded, cfg.weights, cfg.decoder
    ));
    Ok(Segmenter::with_backbone(
        classifier.backbone,
        preset.arch,
        cfg.decoder,
        classes,
        run.device,
    ))
}

/// Trains the network with the strategy's policy; returns the trained model (inference
/// device), its history and (all, trainable) parameter counts.
fn train(
    run: &Run<'_>,
    preset: &Preset,
    ds: &SegDataset,
    loss: &SegLoss,
    model: Segmenter,
    size: usize,
) -> Result<(Segmenter, crate::train::History, (usize, usize))> {
    let cfg = run.cfg;
    let is_new = |key: &str| key.starts_with("decoder.") || key.starts_with(SEGMENTATION_HEAD);
    let trains = |key: &str| -> bool {
        if is_new(key) {
            return true;
        }
        let (stage, n) = preset.arch.stage_of(key);
        cfg.strategy.trains_stage(stage, n)
    };
    // Flags: every BatchNorm by the policy; the decoder's dropout is always on while training.
    let bn_trains = |key: &str| {
        key == "decoder.dropout" || (cfg.bn == BnPolicy::Train && trains(&format!("{key}.weight")))
    };
    let ad = run.device.clone().autodiff();
    let model = set_trainable(
        model.set_bn_momentum(cfg.bn_momentum).train(),
        SEGMENTATION_HEAD,
        &Trainable {
            param: &trains,
            batch_norm: &bn_trains,
        },
    );
    let params = count_params(&model);
    run.say(format!("{} of {} parameters train", params.1, params.0));
    let transform = |train: bool| PairTransform {
        size,
        mean: preset.mean,
        std: preset.std,
        crop: train && cfg.augment.crop,
        flip: train && cfg.augment.flip,
    };
    let objective = network::SegObjective {
        loss,
        train: ds.train.clone(),
        val: ds.val.clone(),
        train_transform: transform(true),
        eval_transform: transform(false),
        classes: ds.class_names.len(),
        batch_size: cfg.batch_size,
        seed: cfg.seed,
        lr_mult: cfg.backbone_lr_mult,
        device: ad.clone(),
    };
    let mut trainer = Trainer::new(objective, model, cfg.optimizer_config(), ad).seeded(cfg.seed);
    let history = run.train(&mut trainer, Segmentation::METRICS)?;
    Ok((trainer.model.valid(), history, params))
}
