//! Evaluation of a text classifier, `graft eval` of a text run, and its report's examples (the
//! misclassified texts).

use std::fmt::Write as _;
use std::path::Path;

use super::model_files::load_text_run;
use crate::config::FitConfig;
use crate::data::text::{TextDataset, longest_first, open_text};
use crate::error::Result;
use crate::loss::Loss;
use crate::metrics::{Evaluation, MetricsAccumulator};
use crate::model::text_encoder::{TextClassifier, batch_tensors};
use crate::model::tokenizer::TextTokenizer;
use crate::render::html::{esc, note};
use crate::task::classification::report as shared;
use crate::tensor::{DeviceKind, labels as label_tensor, to_vec};
use crate::train::{Evaluated, TaskReport, run_config};

/// Runs `model` (inference mode) over the texts at `positions` and accumulates the metrics.
pub fn evaluate_texts(
    model: &TextClassifier,
    ds: &TextDataset,
    positions: &[usize],
    tokenizer: &TextTokenizer,
    batch_size: usize,
    loss: &Loss,
    classes: usize,
) -> Result<MetricsAccumulator> {
    let device = model.head.weight.device();
    let mut acc = MetricsAccumulator::new(classes, &[5]);
    // Longest first, so batches pad little; the metrics do not depend on the order.
    let positions: Vec<usize> = longest_first(&ds.texts_of(positions))
        .into_iter()
        .map(|k| positions[k])
        .collect();
    for chunk in positions.chunks(batch_size.max(1)) {
        let batch = tokenizer.encode_batch(&ds.texts_of(chunk))?;
        let (ids, types, mask) = batch_tensors(&batch, &device);
        let logits = model.forward(ids, types, mask);
        let labels = ds.labels_of(chunk);
        let l = to_vec(loss.forward(logits.clone(), label_tensor(&labels, &device)))[0] as f64;
        acc.add_indexed(&to_vec(logits), &labels, chunk, l);
    }
    Ok(acc)
}

/// `graft eval --run` of a text run: its test split, or another dataset's (written beside
/// `eval.json`, like the image task's).
pub(super) fn evaluate_run(
    run_dir: &Path,
    data_spec: Option<&str>,
    device: Option<DeviceKind>,
    _quiet: bool,
) -> Result<Evaluated> {
    let cfg = run_config(run_dir)?;
    let device = device.unwrap_or(cfg.device).device()?;
    let (model, card, tokenizer) = load_text_run(run_dir, &device)?;
    let spec = data_spec.unwrap_or(&cfg.data);
    let mut ds = open_text(spec)?;
    if data_spec.is_none()
        && let Some(n) = cfg.limit_test
    {
        ds = ds.limit_test(n, cfg.seed);
    }
    let loss = Loss {
        kind: cfg.loss.kind(cfg.label_smoothing, cfg.focal_gamma)?,
        class_weights: None,
    };
    let acc = evaluate_texts(
        &model,
        &ds,
        &ds.test,
        &tokenizer,
        cfg.batch_size,
        &loss,
        card.num_classes,
    )?;
    let evaluation = acc.finish(&card.class_names).with_data(spec);
    let written = crate::task::classification::eval_files::eval_file(run_dir, data_spec);
    let json = serde_json::to_string_pretty(&evaluation).unwrap_or_default();
    crate::files::write_atomic(&written, json.as_bytes())?;
    Ok(Evaluated {
        json: serde_json::to_value(&evaluation).unwrap_or_default(),
        table: evaluation.table(),
        written,
    })
}

/// The report: the classification sections and the misclassified texts.
pub(super) fn report(run_dir: &Path, cfg: Option<&FitConfig>) -> Result<TaskReport> {
    shared::report(run_dir, "Misclassified test texts", |e| {
        let spec = e.data.as_deref().or(cfg.map(|c| c.data.as_str()));
        misclassified_texts(run_dir, spec, e)
    })
}

/// At most this many misclassified texts are listed, each cut to this many characters.
const MAX_SHOWN: usize = 40;
const MAX_CHARS: usize = 400;

fn misclassified_texts(run_dir: &Path, spec: Option<&str>, eval: &Evaluation) -> String {
    let wrong = &eval.misclassified[..eval.misclassified.len().min(MAX_SHOWN)];
    if wrong.is_empty() {
        return note(if eval.samples > 0 && eval.accuracy >= 1.0 {
            "Every test text was classified correctly."
        } else {
            "eval.json lists no misclassified texts."
        });
    }
    let ds = match spec.map(open_text) {
        Some(Ok(ds)) => ds,
        Some(Err(e)) => {
            return note(&format!(
                "Could not open the dataset to show the texts: {e}"
            ));
        }
        None => return note("The run does not name its dataset: texts can't be shown."),
    };
    let name = |i: usize| {
        eval.class_names
            .get(i)
            .cloned()
            .unwrap_or_else(|| i.to_string())
    };
    let texts: Vec<&str> = wrong
        .iter()
        .map(|m| ds.texts.get(m.index).map_or("", String::as_str))
        .collect();
    let predicted: Vec<usize> = wrong.iter().map(|m| m.predicted).collect();
    let (salient, saliency_note) = match saliency_html(run_dir, &texts, &predicted) {
        Ok(rows) => (rows, String::new()),
        Err(e) => (
            Vec::new(),
            note(&format!("Token saliency could not be computed: {e}")),
        ),
    };
    let mut html = format!(
        "<p class=\"caption\">The first {} misclassified test texts: true → predicted \
         (probability of the prediction), and where the text comes from. Below each text, its \
         tokens as the model sees them, shaded by gradient × input for the predicted class: \
         <span style=\"background:rgba(220,40,40,.6)\">red</span> raised it, \
         <span style=\"background:rgba(40,90,220,.6)\">blue</span> lowered it.</p>\n\
         {saliency_note}<table>\n<tr><th>true → predicted</th><th>text</th></tr>\n",
        wrong.len()
    );
    for (k, m) in wrong.iter().enumerate() {
        let text = ds.texts.get(m.index).map_or("", String::as_str);
        let mut shown: String = text.chars().take(MAX_CHARS).collect();
        if text.chars().count() > MAX_CHARS {
            shown.push('…');
        }
        let origin = ds.origins.get(m.index).map_or("", String::as_str);
        let tokens = salient.get(k).map_or("", String::as_str);
        let _ = writeln!(
            html,
            "<tr><td>{} → {} ({:.2})</td><td>{}<br>{tokens}<span class=\"caption\">{}</span>\
             </td></tr>",
            esc(&name(m.label)),
            esc(&name(m.predicted)),
            m.probability,
            esc(&shown),
            esc(origin)
        );
    }
    html.push_str("</table>");
    html
}

/// Each text's tokens as HTML spans shaded by their gradient × input for `classes[i]` (see
/// [`crate::explain::tokens`]), from the run's saved model; no rows for a run without one.
fn saliency_html(run_dir: &Path, texts: &[&str], classes: &[usize]) -> Result<Vec<String>> {
    if !run_dir.join("model.safetensors").is_file() {
        return Ok(Vec::new());
    }
    let device = burn::tensor::Device::flex();
    let (model, _, tokenizer) = load_text_run(run_dir, &device)?;
    let mut rows = Vec::with_capacity(texts.len());
    // Small batches: each one's backward pass keeps every layer's activations.
    for (chunk, targets) in texts.chunks(8).zip(classes.chunks(8)) {
        let batch = tokenizer.encode_batch(chunk)?;
        let values = crate::explain::tokens::token_saliency(&model, &batch, targets, &device)?;
        for (text, v) in chunk.iter().zip(values) {
            let tokens = tokenizer.tokens(text)?;
            let max = v
                .iter()
                .fold(0f32, |m, x| m.max(x.abs()))
                .max(f32::MIN_POSITIVE);
            let mut row = String::from("<span class=\"tokens\">");
            for (token, value) in tokens.iter().zip(&v) {
                let alpha = (value.abs() / max * 0.8).min(0.8);
                let colour = if *value >= 0.0 {
                    "220,40,40"
                } else {
                    "40,90,220"
                };
                let _ = write!(
                    row,
                    "<span style=\"background:rgba({colour},{alpha:.2})\" title=\"{value:.3}\">{}</span> ",
                    esc(token)
                );
            }
            row.push_str("</span><br>");
            rows.push(row);
        }
    }
    Ok(rows)
}
