//! Classification metrics from predictions: accuracy, top-k, confusion matrix, per-class
//! precision / recall / F1 (as scikit-learn defines them; 0 where undefined).

use serde::{Deserialize, Serialize};

use super::scores::{Metric, Scores, Tally};

/// The share of samples whose highest logit is the true class.
pub const ACCURACY: Metric = Metric {
    name: "accuracy",
    label: "Accuracy",
    higher_is_better: true,
};

/// Metrics of one evaluation, serialisable into `eval.json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Evaluation {
    /// The number of samples evaluated.
    pub samples: usize,
    /// The share of samples whose highest logit is the true class.
    pub accuracy: f64,
    /// Top-k accuracy for the k in `top_k` (the true label among the k highest logits).
    pub top_k: Vec<(usize, f64)>,
    /// The loss averaged over samples.
    pub mean_loss: f64,
    /// Class names in label order (the rows and columns of `confusion`).
    pub class_names: Vec<String>,
    /// `confusion[true][predicted]` counts.
    pub confusion: Vec<Vec<usize>>,
    /// Precision, recall, F1 and support of each class, in label order.
    pub per_class: Vec<ClassMetrics>,
    /// The unweighted mean of the classes' F1 (scikit-learn's `average="macro"`).
    pub macro_f1: f64,
    /// The misclassified samples of lowest index (at most [`MAX_MISCLASSIFIED`]), for the
    /// report's grid.
    #[serde(default)]
    pub misclassified: Vec<Misclassified>,
    /// The dataset spec whose test split was evaluated (what the report reloads the
    /// misclassified images from); absent in evaluations written before it was recorded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data: Option<String>,
}

/// How many misclassified samples an evaluation keeps.
pub const MAX_MISCLASSIFIED: usize = 64;

/// The [`MAX_MISCLASSIFIED`] lowest sample indices of `m`, in index order: the same samples
/// whatever order the batches came in (text inference runs longest first).
fn keep_first(m: &mut Vec<Misclassified>) {
    m.sort_by_key(|x| x.index);
    m.truncate(MAX_MISCLASSIFIED);
}

/// One wrong prediction: which sample (index into the split's source), truth and guess.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Misclassified {
    /// Index of the sample in its dataset source (`Source::load(index)`).
    pub index: usize,
    /// The true class.
    pub label: usize,
    /// The class with the highest logit.
    pub predicted: usize,
    /// Softmax probability of the predicted class.
    pub probability: f32,
}

/// One class's row of the report.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ClassMetrics {
    /// The class name.
    pub name: String,
    /// Of the samples predicted as this class, the share that are (0 when none is).
    pub precision: f64,
    /// Of the samples of this class, the share predicted as it (0 when there are none).
    pub recall: f64,
    /// The harmonic mean of precision and recall (0 when both are 0).
    pub f1: f64,
    /// The number of samples of this class.
    pub support: usize,
}

/// Accumulates predictions batch by batch.
#[derive(Debug, Clone)]
pub struct MetricsAccumulator {
    classes: usize,
    ks: Vec<usize>,
    confusion: Vec<Vec<usize>>,
    top_k_hits: Vec<usize>,
    loss_sum: f64,
    samples: usize,
    misclassified: Vec<Misclassified>,
}

impl MetricsAccumulator {
    /// For `classes` classes, tracking top-k accuracy for each k in `ks`.
    pub fn new(classes: usize, ks: &[usize]) -> Self {
        Self {
            classes,
            ks: ks
                .iter()
                .copied()
                .filter(|&k| k > 1 && k <= classes)
                .collect(),
            confusion: vec![vec![0; classes]; classes],
            top_k_hits: vec![0; ks.len()],
            loss_sum: 0.0,
            samples: 0,
            misclassified: Vec::new(),
        }
    }

    /// Adds a batch like [`MetricsAccumulator::add`] and remembers misclassified samples by
    /// their source `indices`.
    pub fn add_indexed(
        &mut self,
        logits: &[f32],
        labels: &[usize],
        indices: &[usize],
        mean_loss: f64,
    ) {
        let c = self.classes;
        for ((row, &label), &index) in logits.chunks_exact(c).zip(labels).zip(indices) {
            let pred = argmax(row);
            if pred != label {
                let max = row[pred];
                let sum: f32 = row.iter().map(|v| (v - max).exp()).sum();
                self.misclassified.push(Misclassified {
                    index,
                    label,
                    predicted: pred,
                    probability: 1.0 / sum,
                });
                if self.misclassified.len() >= 2 * MAX_MISCLASSIFIED {
                    keep_first(&mut self.misclassified);
                }
            }
        }
        self.add(logits, labels, mean_loss);
    }

    /// Adds a batch: row-major logits `(n, classes)`, labels `(n,)`, and the batch's mean loss.
    pub fn add(&mut self, logits: &[f32], labels: &[usize], mean_loss: f64) {
        let c = self.classes;
        for (row, &label) in logits.chunks_exact(c).zip(labels) {
            let pred = argmax(row);
            if label < c {
                self.confusion[label][pred] += 1;
            }
            let target = row.get(label).copied().unwrap_or(f32::NEG_INFINITY);
            // Rank of the true class = number of classes with a strictly higher logit.
            let rank = row.iter().filter(|&&v| v > target).count();
            for (hits, &k) in self.top_k_hits.iter_mut().zip(&self.ks) {
                if rank < k {
                    *hits += 1;
                }
            }
        }
        self.loss_sum += mean_loss * labels.len() as f64;
        self.samples += labels.len();
    }

    /// Correct predictions so far / samples.
    pub fn accuracy(&self) -> f64 {
        let correct: usize = (0..self.classes).map(|i| self.confusion[i][i]).sum();
        correct as f64 / self.samples.max(1) as f64
    }

    /// Mean loss so far.
    pub fn mean_loss(&self) -> f64 {
        self.loss_sum / self.samples.max(1) as f64
    }

    /// The final report.
    pub fn finish(&self, class_names: &[String]) -> Evaluation {
        let c = self.classes;
        let per_class: Vec<ClassMetrics> = (0..c)
            .map(|i| {
                let tp = self.confusion[i][i] as f64;
                let predicted: usize = (0..c).map(|t| self.confusion[t][i]).sum();
                let support: usize = self.confusion[i].iter().sum();
                let precision = ratio(tp, predicted as f64);
                let recall = ratio(tp, support as f64);
                let f1 = ratio(2.0 * precision * recall, precision + recall);
                ClassMetrics {
                    name: class_names.get(i).cloned().unwrap_or_else(|| i.to_string()),
                    precision,
                    recall,
                    f1,
                    support,
                }
            })
            .collect();
        let macro_f1 = per_class.iter().map(|m| m.f1).sum::<f64>() / c.max(1) as f64;
        Evaluation {
            samples: self.samples,
            accuracy: self.accuracy(),
            top_k: self
                .ks
                .iter()
                .zip(&self.top_k_hits)
                .map(|(&k, &h)| (k, h as f64 / self.samples.max(1) as f64))
                .collect(),
            mean_loss: self.mean_loss(),
            class_names: per_class.iter().map(|m| m.name.clone()).collect(),
            confusion: self.confusion.clone(),
            per_class,
            macro_f1,
            misclassified: {
                let mut m = self.misclassified.clone();
                keep_first(&mut m);
                m
            },
            data: None,
        }
    }

    /// The mean loss and accuracy so far, as the epoch loop logs them.
    pub fn scores(&self) -> Scores {
        Scores {
            loss: self.mean_loss(),
            metrics: vec![(ACCURACY.name, self.accuracy())],
        }
    }
}

impl Tally for MetricsAccumulator {
    fn scores(&self) -> Scores {
        MetricsAccumulator::scores(self)
    }
}

fn ratio(a: f64, b: f64) -> f64 {
    if b > 0.0 { a / b } else { 0.0 }
}

/// Index of the largest value (the first one on ties, as `torch.argmax`).
pub fn argmax(row: &[f32]) -> usize {
    let mut best = 0;
    for (i, &v) in row.iter().enumerate() {
        if v > row[best] {
            best = i;
        }
    }
    best
}

impl Evaluation {
    /// Records which dataset was evaluated.
    pub fn with_data(mut self, spec: &str) -> Evaluation {
        self.data = Some(spec.to_string());
        self
    }

    /// The confusion matrix and per-class table as aligned text.
    pub fn table(&self) -> String {
        let names: Vec<String> = self
            .class_names
            .iter()
            .map(|n| n.chars().take(12).collect())
            .collect();
        let w = names.iter().map(|n| n.len()).max().unwrap_or(4).max(9);
        let mut s = format!(
            "{:<w$} {:>9} {:>9} {:>9} {:>8}\n",
            "class", "precision", "recall", "f1", "support"
        );
        for m in &self.per_class {
            let name: String = m.name.chars().take(12).collect();
            s += &format!(
                "{:<w$} {:>9.4} {:>9.4} {:>9.4} {:>8}\n",
                name, m.precision, m.recall, m.f1, m.support
            );
        }
        s += &format!(
            "\naccuracy {:.4} on {} samples",
            self.accuracy, self.samples
        );
        for (k, a) in &self.top_k {
            s += &format!(", top-{k} {a:.4}");
        }
        s += &format!(
            ", macro F1 {:.4}\n\nconfusion (rows: true, columns: predicted)\n",
            self.macro_f1
        );
        let cw = self
            .confusion
            .iter()
            .flatten()
            .map(|v| v.to_string().len())
            .max()
            .unwrap_or(1)
            .max(3);
        s += &format!("{:<w$}", "");
        for i in 0..names.len() {
            s += &format!(" {:>cw$}", i);
        }
        s.push('\n');
        for (i, row) in self.confusion.iter().enumerate() {
            s += &format!("{:<w$}", format!("{i} {}", names[i]));
            for v in row {
                s += &format!(" {v:>cw$}");
            }
            s.push('\n');
        }
        s
    }
}
