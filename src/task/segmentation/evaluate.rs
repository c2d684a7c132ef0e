//! Evaluation of a segmenter on a split, and `graft eval` of a finished segmentation run.

use std::path::Path;

use burn::tensor::Device;
use serde::{Deserialize, Serialize};

use super::data::{PairTransform, SegDataset, SegSample, load_batch};
use super::loss::SegLoss;
use super::model_files::load_seg_run;
use crate::error::Result;
use crate::files::write_atomic;
use crate::metrics::segmentation::SegTally;
use crate::model::Segmenter;
use crate::progress::Progress;
use crate::task::classification::eval_files::eval_file;
use crate::tensor::{DeviceKind, from_vec, to_vec};
use crate::train::{Evaluated, Tally, run_config};

/// Runs `model` (inference mode) over `samples` and tallies the loss and the pixels.
pub fn evaluate_segmenter(
    model: &Segmenter,
    samples: &[SegSample],
    transform: &PairTransform,
    batch_size: usize,
    loss: &SegLoss,
    classes: usize,
    quiet: bool,
) -> Result<SegTally> {
    let device = model.head.weight.device();
    let mut tally = SegTally::new(classes);
    let progress = Progress::new(quiet, "evaluation", "images", samples.len());
    for chunk in samples.chunks(batch_size.max(1)) {
        let refs: Vec<&SegSample> = chunk.iter().collect();
        let b = load_batch(&refs, transform, 0)?;
        let s = b.size;
        let logits = model.forward(from_vec(b.images, [b.n, 3, s, s], &device));
        let l = to_vec(loss.forward(logits.clone(), &b.masks))[0] as f64;
        let dims = logits.dims();
        tally.add(&to_vec(logits), dims, &b.masks, l);
        progress.inc(b.n as u64);
    }
    progress.finish();
    Ok(tally)
}

/// What `eval.json` holds for a segmentation run: smp's metrics on the dataset-summed pixel
/// counts (see `crate::metrics::segmentation`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SegEvaluation {
    /// Mean IoU over classes (smp `iou_score`, macro).
    pub miou: f64,
    pub iou_per_class: Vec<f64>,
    /// Correct pixels / counted pixels.
    pub pixel_accuracy: f64,
    /// Mean Dice (F1) over classes (smp `f1_score`, macro).
    pub dice: f64,
    pub dice_per_class: Vec<f64>,
    /// IoU of all pixels pooled (smp `iou_score`, micro).
    pub iou_micro: f64,
    /// Classes neither in the masks nor predicted (their IoU counts as 0, as smp counts it).
    pub absent_classes: Vec<usize>,
    pub class_names: Vec<String>,
    pub loss: f64,
    pub samples: usize,
    /// Pixels counted (255 left out).
    pub pixels: u64,
    /// `(truth, predicted)` pixel counts, row = truth.
    pub confusion: Vec<Vec<u64>>,
    /// The dataset spec evaluated.
    pub data: String,
}

impl SegEvaluation {
    pub fn new(tally: &SegTally, class_names: &[String], samples: usize, data: &str) -> Self {
        let c = &tally.confusion;
        let k = c.classes();
        SegEvaluation {
            miou: c.miou(),
            iou_per_class: c.iou_per_class(),
            pixel_accuracy: c.pixel_accuracy(),
            dice: c.dice(),
            dice_per_class: c.dice_per_class(),
            iou_micro: c.iou_micro(),
            absent_classes: c.absent_classes(),
            class_names: class_names.to_vec(),
            loss: tally.scores().loss,
            samples,
            pixels: c.pixels(),
            confusion: c.counts().chunks(k.max(1)).map(<[u64]>::to_vec).collect(),
            data: data.to_string(),
        }
    }

    /// A text table: the headline numbers, then IoU and Dice per class.
    pub fn table(&self) -> String {
        let mut s = format!(
            "mIoU {:.4}  pixel accuracy {:.4}  Dice {:.4}  ({} images, {} pixels)\n",
            self.miou, self.pixel_accuracy, self.dice, self.samples, self.pixels
        );
        let width = self
            .class_names
            .iter()
            .map(String::len)
            .max()
            .unwrap_or(5)
            .max(5);
        s += &format!("{:<width$}  {:>6}  {:>6}\n", "class", "IoU", "Dice");
        for (i, name) in self.class_names.iter().enumerate() {
            let absent = if self.absent_classes.contains(&i) {
                "  (absent)"
            } else {
                ""
            };
            s += &format!(
                "{name:<width$}  {:>6.4}  {:>6.4}{absent}\n",
                self.iou_per_class.get(i).copied().unwrap_or(0.0),
                self.dice_per_class.get(i).copied().unwrap_or(0.0)
            );
        }
        s
    }
}

/// `graft eval --run` for segmentation: the run's model on its own test split (`eval.json`)
/// or on another dataset's (`eval-<spec>.json`).
pub fn evaluate_run(
    run_dir: &Path,
    data_spec: Option<&str>,
    device: Option<DeviceKind>,
    quiet: bool,
) -> Result<Evaluated> {
    let cfg = run_config(run_dir)?;
    let device: Device = device.unwrap_or(cfg.device).device()?;
    let (model, card, _) = load_seg_run(run_dir, &device)?;
    let spec = data_spec.unwrap_or(&cfg.data);
    let mut ds = SegDataset::open(spec)?;
    if data_spec.is_none()
        && let Some(n) = cfg.limit_test
    {
        ds = ds.limit_test(n, cfg.seed);
    }
    if ds.class_names.len() > card.num_classes {
        return Err(crate::error::Error::invalid(format!(
            "{spec} has {} classes; the run's model predicts {}",
            ds.class_names.len(),
            card.num_classes
        )));
    }
    let loss = SegLoss::new(&cfg, card.num_classes, None)?;
    let tally = evaluate_segmenter(
        &model.folded_for_inference(),
        &ds.test,
        &card.eval_transform(),
        cfg.batch_size,
        &loss,
        card.num_classes,
        quiet,
    )?;
    let evaluation = SegEvaluation::new(&tally, &card.class_names, ds.test.len(), spec);
    let written = eval_file(run_dir, data_spec);
    let json = serde_json::to_string_pretty(&evaluation).unwrap_or_default();
    write_atomic(&written, json.as_bytes())?;
    Ok(Evaluated {
        json: serde_json::to_value(&evaluation).unwrap_or_default(),
        table: evaluation.table(),
        written,
    })
}
