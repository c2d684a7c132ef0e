//! Metrics: what a task measures, by name (the epoch loop, `cv`, `compare` and the reports read
//! them without knowing the task), and each task family's accumulators.

pub mod classification;
mod scores;
pub mod segmentation;

pub use classification::{
    ACCURACY, ClassMetrics, Evaluation, MAX_MISCLASSIFIED, MetricsAccumulator, Misclassified,
    argmax,
};
pub use scores::{LOSS, Metric, Scores, Tally};
pub use segmentation::{ClassStats, Confusion, IGNORE_INDEX, MIOU, PIXEL_ACCURACY, SegTally};
