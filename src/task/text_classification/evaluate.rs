//! Evaluation of a text classifier, `graft eval` of a text run, and its report's examples (the
//! test texts of highest loss).

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
use crate::task::classification::report::{
    self as shared, SampleLoss, TopLosses, positions_hash, top_losses, verdict,
};
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

/// The report: the classification sections and the test texts of highest loss.
pub(super) fn report(run_dir: &Path, cfg: Option<&FitConfig>) -> Result<TaskReport> {
    shared::report(run_dir, "Top losses (test texts)", |e| {
        let spec = e.data.as_deref().or(cfg.map(|c| c.data.as_str()));
        top_loss_texts(run_dir, cfg, spec, e)
    })
}

/// At most this many texts are listed, each cut to this many characters.
const MAX_SHOWN: usize = 40;
const MAX_CHARS: usize = 400;

/// The evaluated dataset: `spec`, with the run's test limit when it is the run's own.
fn open_test(spec: &str, cfg: Option<&FitConfig>) -> Result<TextDataset> {
    let mut ds = open_text(spec)?;
    if let Some(c) = cfg.filter(|c| c.data == spec)
        && let Some(n) = c.limit_test
    {
        ds = ds.limit_test(n, c.seed);
    }
    Ok(ds)
}

/// Every test text's prediction and loss under the run's saved model.
fn test_losses(
    run_dir: &Path,
    cfg: Option<&FitConfig>,
    ds: &TextDataset,
) -> Result<Vec<SampleLoss>> {
    let device = cfg
        .and_then(|c| c.device.device().ok())
        .unwrap_or_else(burn::tensor::Device::flex);
    let (model, card, tokenizer) = load_text_run(run_dir, &device)?;
    let batch_size = cfg.map_or(32, |c| c.batch_size).clamp(1, 256);
    // Longest first, so batches pad little.
    let positions: Vec<usize> = longest_first(&ds.texts_of(&ds.test))
        .into_iter()
        .map(|k| ds.test[k])
        .collect();
    let mut out = Vec::with_capacity(positions.len());
    for chunk in positions.chunks(batch_size) {
        let batch = tokenizer.encode_batch(&ds.texts_of(chunk))?;
        let (ids, types, mask) = batch_tensors(&batch, &device);
        let logits = to_vec(model.forward(ids, types, mask));
        let labels = ds.labels_of(chunk);
        for ((row, &label), &index) in logits
            .chunks_exact(card.num_classes)
            .zip(&labels)
            .zip(chunk)
        {
            out.push(SampleLoss::from_logits(row, label, index));
        }
    }
    Ok(out)
}

fn top_loss_texts(
    run_dir: &Path,
    cfg: Option<&FitConfig>,
    spec: Option<&str>,
    eval: &Evaluation,
) -> String {
    let ds = match spec.map(|s| open_test(s, cfg)) {
        Some(Ok(ds)) => Some(ds),
        Some(Err(e)) => {
            let top = TopLosses::from_eval(eval, "the dataset could not be opened".into());
            return note(&format!(
                "Could not open the dataset to show the texts: {e}"
            )) + &captions_only(&top, eval);
        }
        None => None,
    };
    let Some(ds) = ds else {
        return note("The run does not name its dataset: texts can't be shown.");
    };
    let key = format!(
        "{} {} {}",
        spec.unwrap_or(""),
        ds.test.len(),
        positions_hash(&ds.test)
    );
    let top = top_losses(run_dir, eval, Some(key), || test_losses(run_dir, cfg, &ds));
    let shown = &top.top[..top.top.len().min(MAX_SHOWN)];
    if shown.is_empty() {
        return note(if eval.samples > 0 && eval.accuracy >= 1.0 {
            "Every test text was classified correctly."
        } else {
            "eval.json lists no misclassified texts."
        });
    }
    let texts: Vec<&str> = shown
        .iter()
        .map(|m| ds.texts.get(m.index).map_or("", String::as_str))
        .collect();
    let predicted: Vec<usize> = shown.iter().map(|m| m.predicted).collect();
    let (salient, saliency_note) = match saliency_html(run_dir, &texts, &predicted) {
        Ok(rows) => (rows, String::new()),
        Err(e) => (
            Vec::new(),
            note(&format!("Token saliency could not be computed: {e}")),
        ),
    };
    // Origins are `FILE:LINE`: shown relative to the data's folder.
    let root = text_root(spec.unwrap_or(""));
    let mut html = top.intro(shown.len(), "texts");
    let _ = write!(
        html,
        "<p class=\"caption\">Below each text, where it comes from, and its tokens as the model \
         sees them, shaded by gradient × input for the predicted class: \
         <span style=\"background:rgba(220,40,40,.6)\">red</span> raised it, \
         <span style=\"background:rgba(40,90,220,.6)\">blue</span> lowered it.</p>\n\
         {saliency_note}<table>\n<tr><th>loss</th><th class=\"l\">true → predicted</th>\
         <th class=\"l\">text</th></tr>\n"
    );
    for (k, m) in shown.iter().enumerate() {
        let text = ds.texts.get(m.index).map_or("", String::as_str);
        let mut cut: String = text.chars().take(MAX_CHARS).collect();
        if text.chars().count() > MAX_CHARS {
            cut.push('…');
        }
        let origin = ds.origins.get(m.index).map_or("", String::as_str);
        let origin = root
            .as_deref()
            .and_then(|r| origin.strip_prefix(r))
            .unwrap_or(origin);
        let tokens = salient.get(k).map_or("", String::as_str);
        let loss = if top.exact() {
            format!(" data-loss=\"{:.6}\"", m.loss)
        } else {
            String::new()
        };
        let _ = writeln!(
            html,
            "<tr class=\"top-loss\" data-index=\"{}\"{loss}><td>{}</td><td class=\"l\">{}</td>\
             <td class=\"l\">{}<br>{tokens}<span class=\"caption path\">{}</span></td></tr>",
            m.index,
            esc(top.loss_text(m).trim_start_matches("loss ")),
            esc(&verdict(m, &eval.class_names)),
            esc(&cut),
            esc(origin)
        );
    }
    html.push_str("</table>");
    html
}

/// The folder a text spec reads from, with a trailing `/` (`csv:DIR/x.csv` → `DIR/`,
/// `textfolder:DIR` → `DIR/`).
fn text_root(spec: &str) -> Option<String> {
    let rest = spec
        .strip_prefix("csv:")
        .or_else(|| spec.strip_prefix("textfolder:"))?;
    let path = rest
        .rsplit_once('?')
        .filter(|(_, q)| q.contains('='))
        .map_or(rest, |(p, _)| p);
    let path = Path::new(path);
    let dir = if path.is_file() { path.parent()? } else { path };
    let dir = dir.to_string_lossy();
    (!dir.is_empty()).then(|| format!("{}/", dir.trim_end_matches('/')))
}

/// The samples' captions without their texts (the dataset is gone).
fn captions_only(top: &TopLosses, eval: &Evaluation) -> String {
    let items: String = top
        .top
        .iter()
        .take(MAX_SHOWN)
        .map(|m| {
            format!(
                "<li>{} · {} · text #{}</li>",
                esc(&verdict(m, &eval.class_names)),
                esc(&top.loss_text(m)),
                m.index
            )
        })
        .collect();
    if items.is_empty() {
        String::new()
    } else {
        format!("<ul>{items}</ul>")
    }
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
