//! What the generic code knows of a task's metrics: their names and directions ([`Metric`]),
//! a split's values for an epoch ([`Scores`]), and the running accumulator of a split
//! ([`Tally`]).

/// A metric a task reports, and which way is better.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Metric {
    /// The name in `metrics.jsonl` after its split prefix (`accuracy` → `val_accuracy`).
    pub name: &'static str,
    /// How the report titles it (`Accuracy`, `mIoU`).
    pub label: &'static str,
    /// Whether a larger value is better (accuracy) or worse (loss): what early stopping
    /// and the best epoch compare by.
    pub higher_is_better: bool,
}

/// Every epoch's training loss: what no task can do without.
pub const LOSS: Metric = Metric {
    name: "loss",
    label: "Loss",
    higher_is_better: false,
};

/// One split's numbers for an epoch: the mean loss and each of the task's metrics.
#[derive(Debug, Clone, PartialEq)]
pub struct Scores {
    /// The mean loss over the split's samples.
    pub loss: f64,
    /// `(metric name, value)` in the task's order.
    pub metrics: Vec<(&'static str, f64)>,
}

impl Scores {
    /// A score by name (`loss` or a metric's).
    pub fn get(&self, name: &str) -> Option<f64> {
        if name == LOSS.name {
            return Some(self.loss);
        }
        self.metrics
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| *v)
    }

    /// `loss 0.1234 accuracy 0.567`: for progress bars and epoch lines.
    pub fn text(&self) -> String {
        let mut s = format!("loss {:.4}", self.loss);
        for (name, v) in &self.metrics {
            s += &format!(" {name} {v:.4}");
        }
        s
    }
}

/// A split's running metrics, batch by batch (an epoch's training batches, a validation pass).
pub trait Tally {
    /// The scores so far.
    fn scores(&self) -> Scores;
}
