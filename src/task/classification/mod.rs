//! What the classification tasks (images, texts) share: the linear head trained on cached
//! features (the probe), the feature cache, the head's width and the loss (`setup`), and the
//! report's confusion matrix and per-class sections.

pub mod eval_files;
pub mod feature_cache;
pub mod head;
mod lbfgs_probe;
pub mod predict;
pub mod probe;
pub mod report;
pub mod setup;
