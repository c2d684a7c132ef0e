//! Evaluation of a classifier on a split of images, and `graft eval` of a finished run.

use std::path::Path;

use crate::progress::Progress;
use burn::tensor::Device;

use super::model_files::load_run;
use crate::data::{self, Loader, Pipeline, Subset};
use crate::error::Result;
use crate::files::write_atomic;
use crate::loss::Loss;
use crate::metrics::MetricsAccumulator;
use crate::model::Classifier;
use crate::tensor::{DeviceKind, from_vec, labels as label_tensor, to_vec};
use crate::train::{Evaluated, run_config};

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
    let progress = Progress::new(quiet, "evaluation", "images", subset.len());
    for batch in Loader::sequential(subset.clone(), pipe.clone(), batch_size) {
        let batch = batch?;
        let x = from_vec(batch.images, batch.shape, &device);
        let logits = model.forward(x);
        let l =
            to_vec(loss.forward(logits.clone(), label_tensor(&batch.labels, &device)))[0] as f64;
        acc.add_indexed(&to_vec(logits), &batch.labels, &batch.indices, l);
        progress.inc(batch.labels.len() as u64);
    }
    progress.finish();
    Ok(acc)
}

/// `graft eval --run`: the run's model on its own test split (written to `eval.json`), or on
/// the test split of another dataset spec (written beside it, to `eval-<spec>.json`, so the
/// run's own evaluation and report stay as they were).
pub fn evaluate_run(
    run_dir: &Path,
    data_spec: Option<&str>,
    device: Option<DeviceKind>,
    quiet: bool,
) -> Result<Evaluated> {
    let cfg = run_config(run_dir)?;
    let device: Device = device.unwrap_or(cfg.device).device()?;
    let (model, card, p) = load_run(run_dir, &device)?;
    let spec = data_spec.unwrap_or(&cfg.data);
    let mut ds = data::open(spec)?;
    if data_spec.is_none()
        && let Some(n) = cfg.limit_test
    {
        ds = ds.limit_test(n, cfg.seed);
    }
    let pipe = Pipeline::eval(card.image_size, p.mean, p.std, card.resize)?;
    let loss = Loss {
        kind: cfg.loss.kind(cfg.label_smoothing, cfg.focal_gamma)?,
        class_weights: None,
    };
    let acc = evaluate_network(
        &model.folded_for_inference(),
        &ds.test,
        &pipe,
        cfg.batch_size,
        &loss,
        card.num_classes,
        quiet,
    )?;
    // The folded copy, as the fit's own test evaluation: `eval.json` comes out the same.
    let evaluation = acc.finish(&card.class_names).with_data(spec);
    let written = crate::task::classification::eval_files::eval_file(run_dir, data_spec);
    let json = serde_json::to_string_pretty(&evaluation).unwrap_or_default();
    write_atomic(&written, json.as_bytes())?;
    Ok(Evaluated {
        json: serde_json::to_value(&evaluation).unwrap_or_default(),
        table: evaluation.table(),
        written,
    })
}
