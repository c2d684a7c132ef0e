//! Evaluation: metrics over a labelled split.

pub mod metrics;

pub use metrics::{ClassMetrics, Evaluation, MetricsAccumulator, argmax};
