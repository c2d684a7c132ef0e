//! Training: losses, optimizers and schedules, and the fit loop that ties data and model together.

pub mod cache;
pub mod checkpoint;
pub mod fit;
pub mod loss;
pub mod optim;

pub use loss::{Loss, LossKind};
pub use optim::{Grads, Optimizer, OptimizerConfig, OptimizerKind, Schedule};
