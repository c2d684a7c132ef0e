//! Training: losses, optimizers and schedules, and the fit loop that ties data and model together.

pub mod cache;
pub mod checkpoint;
pub mod fit;
pub mod loss;
mod network;
pub mod optim;
mod probe;
mod run_files;

pub use loss::{Loss, LossKind};
pub use optim::{Grads, Optimizer, OptimizerConfig, OptimizerKind, Schedule};
