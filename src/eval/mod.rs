//! Evaluation: metrics over a labelled split, k-fold cross-validation, and grids of runs.

pub mod compare;
pub mod cv;
pub mod metrics;

pub use metrics::{
    ClassMetrics, Evaluation, MAX_MISCLASSIFIED, MetricsAccumulator, Misclassified, argmax,
};
