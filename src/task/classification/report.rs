//! The classification parts of a run's report: headline test numbers, the confusion matrix,
//! per-class precision / recall, and the test samples of highest loss (fastai's top losses:
//! each test sample's cross-entropy of its true class, from the run's model, kept in
//! `test-losses.json` so that the next report does not evaluate again).

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::metrics::{Evaluation, argmax};
use crate::render::charts::{self, BLUE_C, Bars, ORANGE_C};
use crate::render::html::{self, Cell, esc, note, num, pct};
use crate::train::{Section, TaskReport};

/// A classification run's part of its report: headline cards, the confusion matrix, per-class
/// precision / recall and the task's examples (`misclassified` section: `examples` renders
/// it); without an `eval.json` (an unfinished run) the sections say so.
pub fn report(
    run_dir: &Path,
    examples_heading: &str,
    examples: impl FnOnce(&Evaluation) -> String,
) -> Result<TaskReport> {
    let eval: Option<Evaluation> = read_json_if_present(&run_dir.join("eval.json"))?;
    Ok(match &eval {
        Some(e) => {
            let mut sections = sections(e);
            sections.push(Section::new("misclassified", examples_heading, examples(e)));
            TaskReport {
                cards: cards(e),
                sections,
            }
        }
        None => {
            let msg = note("No eval.json yet (the run has not finished): no test metrics to show.");
            TaskReport {
                cards: Vec::new(),
                sections: [
                    ("confusion-matrix", "Confusion matrix"),
                    ("per-class", "Per-class precision and recall"),
                    ("misclassified", examples_heading),
                ]
                .into_iter()
                .map(|(id, heading)| Section::new(id, heading, msg.clone()))
                .collect(),
            }
        }
    })
}

/// The headline cards of an evaluation.
pub fn cards(e: &Evaluation) -> Vec<(String, String)> {
    let top5 = e
        .top_k
        .iter()
        .find(|(k, _)| *k == 5)
        .map_or("—".to_string(), |(_, a)| pct(*a));
    vec![
        ("test accuracy".to_string(), pct(e.accuracy)),
        ("top-5 accuracy".to_string(), top5),
        ("macro F1".to_string(), num(e.macro_f1, 4)),
        ("test loss".to_string(), num(e.mean_loss, 4)),
        ("test samples".to_string(), e.samples.to_string()),
    ]
}

/// The confusion matrix and per-class sections.
pub fn sections(e: &Evaluation) -> Vec<Section> {
    let mut s = Vec::new();
    confusion(&mut s, e);
    per_class(&mut s, e);
    s
}

/// Reads and parses a JSON file, naming it in errors; `None` when the file does not exist.
pub fn read_json_if_present<T: serde::de::DeserializeOwned>(path: &Path) -> Result<Option<T>> {
    if !path.exists() {
        return Ok(None);
    }
    let text = crate::files::read_text(path)?;
    serde_json::from_str(&text)
        .map(Some)
        .map_err(|e| Error::file(path, format!("invalid JSON: {e}")))
}

fn confusion(sections: &mut Vec<Section>, eval: &Evaluation) {
    let names = &eval.class_names;
    let body = match charts::heatmap("Confusion matrix (test)", names, &eval.confusion) {
        Ok(svg) => html::figure(
            &svg,
            "Rows: true class; columns: predicted class. Numbers are counts (shown when the cells are \
             large enough); the colour is the share of the true class's samples.",
        ),
        Err(e) => note(&e.to_string()),
    };
    sections.push(Section::new("confusion-matrix", "Confusion matrix", body));
}

fn per_class(sections: &mut Vec<Section>, eval: &Evaluation) {
    let cats: Vec<String> = eval.per_class.iter().map(|m| m.name.clone()).collect();
    let bars = [
        Bars {
            name: "precision".into(),
            values: eval.per_class.iter().map(|m| m.precision).collect(),
            errors: None,
            color: BLUE_C,
        },
        Bars {
            name: "recall".into(),
            values: eval.per_class.iter().map(|m| m.recall).collect(),
            errors: None,
            color: ORANGE_C,
        },
    ];
    let chart = match charts::bar_chart(
        "Precision and recall per class (test)",
        &cats,
        &bars,
        "",
        0.0,
        None,
    ) {
        Ok(svg) => html::figure(&svg, ""),
        Err(e) => note(&e.to_string()),
    };
    let rows: Vec<(Vec<Cell>, bool)> = eval
        .per_class
        .iter()
        .map(|m| {
            (
                vec![
                    Cell::Left(m.name.clone()),
                    Cell::Num(num(m.precision, 4)),
                    Cell::Num(num(m.recall, 4)),
                    Cell::Num(num(m.f1, 4)),
                    Cell::Num(m.support.to_string()),
                ],
                false,
            )
        })
        .collect();
    let table = html::table(
        &[
            ("class", true),
            ("precision", false),
            ("recall", false),
            ("F1", false),
            ("support", false),
        ],
        &rows,
    );
    let summary = format!(
        "<p class=\"caption\">Macro F1 {} over {} classes.</p>",
        esc(&num(eval.macro_f1, 4)),
        eval.per_class.len()
    );
    sections.push(Section::new(
        "per-class",
        "Per-class precision and recall",
        format!("{chart}\n{table}\n{summary}"),
    ));
}

/// The most test samples of highest loss a report keeps (and shows).
pub const TOP_KEPT: usize = 64;
/// Correctly classified samples of lowest loss kept (the heat maps' "right" examples).
pub const CONFIDENT_KEPT: usize = 8;
/// Where a run's per-sample test losses are kept between reports.
pub const LOSSES_FILE: &str = "test-losses.json";

/// One test sample's prediction and loss.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct SampleLoss {
    /// Index of the sample in its source (as `Misclassified::index`).
    pub index: usize,
    /// The true class.
    pub label: usize,
    /// The class of highest logit.
    pub predicted: usize,
    /// Softmax probability of the predicted class.
    pub probability: f32,
    /// Cross-entropy of the true class, `-ln softmax(logits)[label]` (whatever loss the run
    /// trained with).
    pub loss: f32,
}

impl SampleLoss {
    /// From one row of logits.
    pub fn from_logits(row: &[f32], label: usize, index: usize) -> SampleLoss {
        if row.is_empty() {
            return SampleLoss {
                index,
                label,
                predicted: 0,
                probability: f32::NAN,
                loss: f32::NAN,
            };
        }
        let predicted = argmax(row);
        let max = row[predicted];
        let lse = max + row.iter().map(|v| (v - max).exp()).sum::<f32>().ln();
        SampleLoss {
            index,
            label,
            predicted,
            probability: (max - lse).exp(),
            loss: row.get(label).map_or(f32::INFINITY, |t| lse - t),
        }
    }

    /// Whether the prediction is the true class.
    pub fn correct(&self) -> bool {
        self.label == self.predicted
    }
}

/// The test samples a report shows: those of highest loss, and the most confidently right.
#[derive(Debug, Clone)]
pub struct TopLosses {
    /// Highest loss first (ties: lowest index first).
    pub top: Vec<SampleLoss>,
    /// Correctly classified, lowest loss first.
    pub confident: Vec<SampleLoss>,
    /// `None` when the losses are exact (the run's model over its whole test split); else why
    /// not, and `top` is `eval.json`'s misclassified list, most confident mistake first, with
    /// the lower bound `-ln(1 - p)` of each loss.
    pub fallback: Option<String>,
}

fn by_loss_desc(a: &SampleLoss, b: &SampleLoss) -> std::cmp::Ordering {
    b.loss.total_cmp(&a.loss).then(a.index.cmp(&b.index))
}

impl TopLosses {
    /// The highest losses and the most confident correct predictions among `all`.
    pub fn of(all: &[SampleLoss]) -> TopLosses {
        let mut top = all.to_vec();
        top.sort_by(by_loss_desc);
        top.truncate(TOP_KEPT);
        let mut confident: Vec<SampleLoss> = all.iter().filter(|s| s.correct()).copied().collect();
        confident.sort_by(|a, b| by_loss_desc(b, a));
        confident.truncate(CONFIDENT_KEPT);
        TopLosses {
            top,
            confident,
            fallback: None,
        }
    }

    /// What `eval.json` alone tells: its misclassified samples (the lowest indices), most
    /// confident mistake first, each loss at its lower bound.
    pub fn from_eval(eval: &Evaluation, reason: String) -> TopLosses {
        let mut top: Vec<SampleLoss> = eval
            .misclassified
            .iter()
            .map(|m| SampleLoss {
                index: m.index,
                label: m.label,
                predicted: m.predicted,
                probability: m.probability,
                // p(true) <= 1 - p(predicted) for a wrong prediction.
                loss: -(1.0 - m.probability).max(0.0).ln(),
            })
            .collect();
        top.sort_by(by_loss_desc);
        TopLosses {
            top,
            confident: Vec::new(),
            fallback: Some(reason),
        }
    }

    /// Whether the losses are exact (not `eval.json`'s lower bounds).
    pub fn exact(&self) -> bool {
        self.fallback.is_none()
    }

    /// `"loss 2.31"`, or `"loss ≥ 0.97"` for a lower bound.
    pub fn loss_text(&self, s: &SampleLoss) -> String {
        let sign = if self.exact() { "" } else { "≥ " };
        format!("loss {sign}{}", num(f64::from(s.loss), 2))
    }

    /// The paragraph above a list of `shown` samples (`what`: "images", "texts").
    pub fn intro(&self, shown: usize, what: &str) -> String {
        match &self.fallback {
            None => format!(
                "<p class=\"caption\">The {shown} test {what} of highest loss (the cross-entropy \
                 of the true class under the run's model), highest first, captioned true → \
                 predicted (probability of the prediction); ✓ marks a right prediction. The \
                 first ones are most often mislabelled, ambiguous or out of the classes.</p>\n"
            ),
            Some(why) => format!(
                "<p class=\"caption\">{shown} misclassified test {what} from eval.json, most \
                 confident mistake first, captioned true → predicted (probability of the \
                 prediction); each loss is its lower bound −ln(1 − p).</p>\n{}",
                note(&format!("Per-sample losses are not available: {why}."))
            ),
        }
    }
}

/// `"cat → dog (0.87)"`, or `"cat ✓ (0.95)"` when right.
pub fn verdict(s: &SampleLoss, names: &[String]) -> String {
    let name = |i: usize| names.get(i).cloned().unwrap_or_else(|| i.to_string());
    if s.correct() {
        format!("{} ✓ ({:.2})", name(s.label), s.probability)
    } else {
        format!(
            "{} → {} ({:.2})",
            name(s.label),
            name(s.predicted),
            s.probability
        )
    }
}

/// What identifies a run's model file: its size and modification time.
pub fn model_stamp(run_dir: &Path) -> Option<String> {
    let meta = std::fs::metadata(run_dir.join("model.safetensors")).ok()?;
    let mtime = meta
        .modified()
        .ok()?
        .duration_since(std::time::UNIX_EPOCH)
        .ok()?
        .as_nanos();
    Some(format!("{}-{mtime}", meta.len()))
}

/// `test-losses.json`: the kept samples, and what they were computed from.
#[derive(Debug, Serialize, Deserialize)]
struct LossFile {
    /// The model, data and split (see [`top_losses`]); a different key means a stale file.
    key: String,
    samples: usize,
    top: Vec<SampleLoss>,
    confident: Vec<SampleLoss>,
}

/// The run's top losses: from `test-losses.json` when it was written for `key` (the model
/// file's stamp and the test split's identity), else from `compute` (every test sample's
/// [`SampleLoss`]), then kept there. Falls back to `eval.json`'s list, saying why, when the
/// run has no model, `compute` fails, or it does not cover the samples `eval.json` counted
/// (the dataset changed since, or the run is a cross-validation fold).
pub fn top_losses(
    run_dir: &Path,
    eval: &Evaluation,
    key: Option<String>,
    compute: impl FnOnce() -> Result<Vec<SampleLoss>>,
) -> TopLosses {
    let Some(stamp) = model_stamp(run_dir) else {
        return TopLosses::from_eval(eval, "the run has no model.safetensors".into());
    };
    let Some(key) = key else {
        return TopLosses::from_eval(eval, "the run's test split could not be opened".into());
    };
    let key = format!("v1 {stamp} {key}");
    let path = run_dir.join(LOSSES_FILE);
    let kept: Option<LossFile> = read_json_if_present(&path).ok().flatten();
    let (samples, top) = match kept.filter(|f| f.key == key) {
        Some(f) => (
            f.samples,
            TopLosses {
                top: f.top,
                confident: f.confident,
                fallback: None,
            },
        ),
        None => match compute() {
            Ok(all) => {
                let top = TopLosses::of(&all);
                let file = LossFile {
                    key,
                    samples: all.len(),
                    top: top.top.clone(),
                    confident: top.confident.clone(),
                };
                // A folder the report can't write to still gets its report.
                if let Ok(json) = serde_json::to_string(&file) {
                    let _ = crate::files::write_atomic(&path, json.as_bytes());
                }
                (all.len(), top)
            }
            Err(e) => {
                return TopLosses::from_eval(
                    eval,
                    format!("evaluating the run's model again failed ({e})"),
                );
            }
        },
    };
    if samples != eval.samples {
        return TopLosses::from_eval(
            eval,
            format!(
                "the test split rebuilt from the settings has {samples} samples, eval.json \
                 counted {} (the dataset changed, or the run is a cross-validation fold)",
                eval.samples
            ),
        );
    }
    top
}

/// A small stable hash of sample positions (part of a [`top_losses`] key).
pub fn positions_hash(positions: &[usize]) -> u64 {
    // FNV-1a over the little-endian bytes.
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for p in positions {
        for b in (*p as u64).to_le_bytes() {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
    }
    h
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sample_losses_are_the_true_class_cross_entropy() {
        let s = SampleLoss::from_logits(&[2.0, 0.0, -1.0], 1, 7);
        let lse = (2f32.exp() + 1.0 + (-1f32).exp()).ln();
        assert_eq!((s.index, s.label, s.predicted), (7, 1, 0));
        assert!((s.loss - lse).abs() < 1e-6);
        assert!((s.probability - (2.0 - lse).exp()).abs() < 1e-6);
        assert!(!s.correct());
    }

    #[test]
    fn top_losses_sort_by_loss_and_keep_the_confident_right_ones() {
        let all: Vec<SampleLoss> = (0..100)
            .map(|i| {
                let label = i % 3;
                let mut row = [0.0f32; 3];
                row[(i * 7) % 3] = (i % 5) as f32;
                SampleLoss::from_logits(&row, label, i)
            })
            .collect();
        let t = TopLosses::of(&all);
        assert_eq!(t.top.len(), TOP_KEPT);
        assert!(t.top.windows(2).all(|w| w[0].loss >= w[1].loss));
        let max = all.iter().map(|s| s.loss).fold(f32::MIN, f32::max);
        assert_eq!(t.top[0].loss, max);
        assert!(t.confident.iter().all(SampleLoss::correct));
        assert!(t.confident.windows(2).all(|w| w[0].loss <= w[1].loss));
    }
}
